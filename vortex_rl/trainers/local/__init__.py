"""The in-process pieces: the dense learner (log-probs, loss, PPO updates), the embedded rollout worker,
loading the actor model and its tokenizer, and the supervised warm-up."""
