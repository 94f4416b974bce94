"""What is stored and how it is read.

The tables, migrations, series, observations, forecasts, the model registry, job-run records and change tokens.
"""
