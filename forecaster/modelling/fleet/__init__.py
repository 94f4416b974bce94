"""Fleets: K recurrent models of one shape trained together (``recurrence``: the batched kernel;
``sizing``: how many per fleet and where one pays; ``training``: the loop, each member as if alone)."""
