"""The RL math as pure tensor functions (after verl's ``core_algos``): advantage estimators, policy losses,
KL estimators, loss aggregation, rollout/training mismatch correction and dynamic sampling. Imports only
torch and ``vortex_rl.registry``."""
