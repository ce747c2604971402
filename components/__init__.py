"""omnistage's pipeline steps as library code, the `omnistage` CLI and the KFP components that call them."""

from components.logging_config import quiet_backend_notices

# Every omnistage process imports this package before megatron-core: its backend notices stay out of sight.
quiet_backend_notices()
