"""The only code that imports Ray: joining/starting a cluster, placement groups, the learner, rollout and
reward actors and their groups, the weight sync between them, and assembling a Ray run."""
