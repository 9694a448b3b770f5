"""What runs inside Cogwork pods: elastic DDP training, evaluation, progress reporting."""
