"""Time on a series' axis: frequencies and their season, trading days of an exchange, cron expressions."""
