"""Generic networks: the timm classifier factory (``classifier``) and offline pretrained weights (``pretrained``)."""
