"""The workflow manager: templates, workflow expansion and job bookkeeping."""
