"""The use-case layer: one function per thing a user can do.

Each function opens its own transaction(s), does its own side effects (refreshing
the stored forecast, recording a run) and returns a plain result. Routes (``api/``),
CLI commands, scheduler jobs, workers and benchmarks are thin adapters that validate
input, call one of these, and map the result; none of them runs SQL of its own.

    retrain        stored observations -> new model version -> gate -> stored forecast
    models         promote a version (force past the gate), serve the baseline, roll back
    observations   push observations (validated, atomic), delete a range (the repair)
    jobs           start a job run (enqueue or run in process); one series of a run (a worker task)
    figures        the dashboard's and the metrics' figures, read from the database
    database       open the database, move its schema, say whether it can serve
"""
