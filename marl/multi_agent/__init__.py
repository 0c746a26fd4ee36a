"""The multi-agent concepts every algorithm shares: groups of agents, sharing modes, the input rule (:mod:`.groups`)."""
