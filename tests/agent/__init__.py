"""Tests of the agent: job type definitions and the job runner."""
