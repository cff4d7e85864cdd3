import os
import sys
import warnings

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("S3PRL_PLUGINS_OFFLINE", "1")  # tests never download
warnings.filterwarnings("ignore", message=".*weight_norm.*")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")
    parser.addoption("--rungpu", action="store_true", default=False, help="also run tests marked gpu (needs CUDA)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: heavy test, opt-in with --runslow")
    config.addinivalue_line("markers", "gpu: needs a CUDA device, opt-in with --rungpu")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))
        if "gpu" in item.keywords and not (config.getoption("--rungpu") and torch.cuda.is_available()):
            item.add_marker(pytest.mark.skip(reason="gpu: run with --rungpu on a CUDA machine"))
