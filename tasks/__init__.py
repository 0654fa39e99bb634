"""Prefect tasks and Ray actors that wrap the worldstereo library."""
