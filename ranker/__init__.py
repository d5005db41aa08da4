"""Ranking and deciding: rankers score every camera of a tick (scene only); the switching policy turns scores into
cuts. Datasets, tuning, evaluation/replay and MLflow helpers live here too. Imports features/, never runtime/."""
