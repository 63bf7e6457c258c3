"""Scenarios: data sets cut into task streams under one of the three CL settings."""
