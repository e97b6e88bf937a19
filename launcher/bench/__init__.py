"""`dynlaunch bench`: measurements of a running stack."""
