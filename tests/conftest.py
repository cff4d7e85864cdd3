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
