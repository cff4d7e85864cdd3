"""Tasks: what the one trainer optimises (an ``nn.Module`` whose ``forward(batch)`` returns ``(loss, logs)``)."""
