import pytest

from tiledehaze.train.config import load_config


@pytest.fixture
def tiny_config():
    """A training config that runs in about a second: tiny patches, few steps, two images."""
    def make(*overrides: str) -> dict:
        return load_config(None, [
            "patch_size=16", "samples_per_epoch=32", "train_batch_size=8", "val_batch_size=4",
            "num_epochs=2", "threads=1", "data.clean_images=[astronaut, coffee]", "data.val_images=[coffee]",
            "data.val_samples=4", "data.val_patch_size=24", "guard.check_every=2", *overrides])
    return make
