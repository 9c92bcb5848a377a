"""Measurement: size, latency and task metrics of models (`measure`, `evaluate`), paired
comparison (`compare`), side-by-side tables (`bench`, `tables`, `plots`) and the frontier of
several recipes from one teacher (`frontier`)."""
