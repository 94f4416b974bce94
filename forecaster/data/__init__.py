"""Where data comes from and how it is checked.

The sources (Yahoo, Open-Meteo, CSV, sine, snapshots), push bodies, and the rules an observation must meet.
"""
