"""Training on top of the core: the Lightning modules, their builders from a Hydra config, the
callbacks (the resumable checkpoints and signals among them), loggers and schedules, the
trainers' config checks and resolvers, and the run lifecycle (seed, lock, resume, results)
shared by every trainer."""
