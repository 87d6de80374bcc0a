"""Imported only by the fork server (multiprocessing's preload list, see spawner.py):
warms it with the pure-Python side of neonize. Never import it anywhere else."""
from .preload import warm

warm()
