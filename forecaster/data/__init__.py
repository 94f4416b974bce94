"""Where data comes from and how it is checked: the sources (Yahoo, Open-Meteo, CSV, sine, snapshots) and the rules an observation must meet."""
