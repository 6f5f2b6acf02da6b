# Stand-in for EDM's torch_utils package, for difi's converter tests only.
