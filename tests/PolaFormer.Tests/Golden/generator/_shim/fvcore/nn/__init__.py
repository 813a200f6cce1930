def FlopCountAnalysis(*args, **kwargs):
    raise NotImplementedError('fvcore stand-in: imported but not used by the official model code')


def flop_count_table(*args, **kwargs):
    raise NotImplementedError('fvcore stand-in: imported but not used by the official model code')
