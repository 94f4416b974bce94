"""The settings file and environment: its schema, how it loads, and how a bad value is reported."""
