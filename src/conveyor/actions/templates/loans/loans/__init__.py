"""Steps of the example loans project: plain Python functions that Conveyor calls."""
