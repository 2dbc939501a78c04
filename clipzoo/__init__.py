"""clipzoo: CLIP upgrades as Hugging Face transformers models.

`import clipzoo` registers every row of `clipzoo.variants.VARIANTS` with the transformers Auto classes, so
`AutoModel.from_pretrained(folder)` loads any clipzoo checkpoint without `trust_remote_code`.
"""

from clipzoo.registration import register_all
from clipzoo.variants import VARIANTS, CardFacts, Variant, get_variant


__version__ = "0.1.0.dev0"

__all__ = ["VARIANTS", "CardFacts", "Variant", "__version__", "get_variant", "register_all"]

register_all()
