import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The models' tests run tiny inputs, where a second OpenMP thread buys nothing; on the shared 2-core machine
    # under load, two spinning threads per process made these tests 10-50x slower (measured), so use one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
