"""``torch.distributed`` without Ray: the FSDP2 learner rank and the bucketed weight transport
(layouts, flat buffers, broadcast groups, CUDA IPC handles)."""
