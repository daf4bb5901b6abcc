"""lab/clients."""
