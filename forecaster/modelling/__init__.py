"""How a model is fitted, chosen and scored. No database here.

The recurrent network and its training (alone or as a fleet), the statistical candidates, the baselines,
selection, intervals, metrics and the gate.
"""
