"""Analyses of finished runs beyond Table 2: language bias (paper section 5.3, Figure 4) in :mod:`.bias`; student
variants trained like the driver's KD-SPD and compared on LAReQA (ablations, objectives) in :mod:`.variants`."""
