import pytest


@pytest.fixture(scope="module")
def single_process():
    """megatron-core parallel state for one process (gloo), torn down after the module."""
    from model.distributed import init_parallel, teardown_parallel

    init_parallel(seed=1234)
    yield
    teardown_parallel()
