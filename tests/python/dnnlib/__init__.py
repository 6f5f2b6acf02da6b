# Stand-in for StyleGAN2-ADA's dnnlib package, for difi's converter tests only.
