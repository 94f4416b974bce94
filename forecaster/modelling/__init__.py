"""How a model is fitted, chosen and scored: the recurrent network and its training (alone or as a fleet), the statistical candidates, selection, intervals and metrics. No database here."""
