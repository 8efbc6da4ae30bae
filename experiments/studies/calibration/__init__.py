"""The calibration of the `movielens` preset to MovieLens-100k and the Open Bandit Dataset sample."""
