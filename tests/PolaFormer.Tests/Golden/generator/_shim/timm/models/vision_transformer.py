def _cfg(url='', **kwargs):
    """timm's pretrained-config dict; only stored as model.default_cfg by the official factories."""
    return {'url': url, **kwargs}
