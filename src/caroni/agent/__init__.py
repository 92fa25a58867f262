"""The Caroni agent: offers its job types to managers and runs the jobs it accepts."""
