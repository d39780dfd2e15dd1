"""Build a two-layer network, compute its Hessian spectrum and print the inertia."""

import torch

import saddlemap as sm

torch.manual_seed(0)
X = torch.randn(200, 3, dtype=torch.float64)
y = torch.tanh(X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))  # a width-1 teacher
net = sm.TwoLayerNet(a=torch.randn(4), W=torch.randn(4, 3), activation="tanh", dtype=torch.float64)
data = sm.Dataset(X, y)

spec = sm.spectrum(net, data)
print(f"loss {sm.loss(net, data):.6f}, |grad| {sm.gradient(net, data).norm():.3e}")
print(spec.summary())
print("inertia (n+, n0, n-):", tuple(spec.inertia))
