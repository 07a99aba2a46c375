"""Networks: the stage-1 physics-aware net and the SR3 denoiser, with its attention and
noise-level encoding.

Layer: models. May import the foundation (``dehazeddpm.utils``, ``dehazeddpm.physics``) and
torch; knows nothing of diffusion schedules, files or pipelines. Module attribute names equal the
released state-dict keys, so checkpoints load with no translation table.
"""
from .attention import ATTENTION_IMPLS, SelfAttention, set_attention_window
from .encodings import FeatureWiseAffine, NoiseLevelEncoding
from .stage1 import SIZE_MULTIPLE as STAGE1_SIZE_MULTIPLE
from .stage1 import Stage1Net, Stage1Output
from .unet import DEMO_UNET, RELEASED_UNET, UNet, UNetConfig

__all__ = ["ATTENTION_IMPLS", "DEMO_UNET", "FeatureWiseAffine", "NoiseLevelEncoding", "RELEASED_UNET", "STAGE1_SIZE_MULTIPLE", "SelfAttention",
           "Stage1Net", "Stage1Output", "UNet", "UNetConfig", "set_attention_window"]
