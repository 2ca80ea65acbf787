from pathlib import Path
import pytest, torch

FIXTURES = Path(__file__).parent / 'fixtures'

@pytest.fixture(scope='session')
def golden():
    """The reference DiT's numbers (a copy of shared/reference/dit_golden.pt)."""
    return torch.load(FIXTURES / 'dit_golden.pt', weights_only=True)
