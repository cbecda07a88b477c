"""Analyses of finished runs beyond Table 2: language bias (paper section 5.3, Figure 4) in :mod:`.bias`."""
