"""Optimizers that update a ``params`` dict in place, step for step equal to ``torch.optim``,
and gradient-norm clipping equal to ``torch.nn.utils.clip_grad_norm_``.

``opt = SGD(model.params, lr=0.1, momentum=0.9)``; each training step ``opt.step(grads)`` with
``grads`` keyed like ``params``. ``state_dict()`` / ``load_state_dict()`` hold the moments, so a
checkpoint resumes exactly.
"""
import numpy as np


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in ``grads`` (a dict) in place so that their joint L2 norm is at most
    ``max_norm``; returns the norm before clipping. Same formula as torch:
    ``coef = min(1, max_norm / (norm + 1e-6))``."""
    total = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64)))
                              for g in grads.values())))
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return total


class Optimizer:
    """Shared bookkeeping: the parameters, the per-parameter state, the step count."""

    slots = ()

    def __init__(self, params, lr):
        if not lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {lr!r}")
        self.params = params
        self.lr = float(lr)
        self.steps = 0
        self.state = {slot: {} for slot in self.slots}

    def _check(self, grads):
        missing = [k for k in self.params if k not in grads]
        if missing:
            raise KeyError(f"step: expected a gradient for every parameter, missing {missing}")
        for name, p in self.params.items():
            if grads[name].shape != p.shape:
                raise ValueError(f"step: gradient of {name} has shape {grads[name].shape}, "
                                 f"expected {p.shape}")

    def state_dict(self):
        """Copies of the moments and the step count (plain arrays and ints)."""
        return {"steps": self.steps,
                "state": {slot: {k: v.copy() for k, v in values.items()}
                          for slot, values in self.state.items()}}

    def load_state_dict(self, state):
        for slot, values in state["state"].items():
            for name, v in values.items():
                if name not in self.params or self.params[name].shape != np.shape(v):
                    raise ValueError(f"optimizer state {slot}/{name} does not fit the parameters")
        self.steps = int(state["steps"])
        self.state = {slot: {k: np.array(v, dtype=self.params[k].dtype)
                             for k, v in state["state"].get(slot, {}).items()}
                      for slot in self.slots}


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay, as
    ``torch.optim.SGD``::

        g = grad + weight_decay * p
        buf = g (first step)  or  momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov)  or  buf
        p -= lr * g
    """

    slots = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov: expected momentum > 0 and dampening = 0")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)

    def step(self, grads):
        self._check(grads)
        buffers = self.state["momentum_buffer"]
        for name, p in self.params.items():
            g = grads[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                if name not in buffers:
                    buffers[name] = np.array(g, dtype=p.dtype)
                else:
                    buf = buffers[name]
                    buf *= self.momentum
                    buf += (1.0 - self.dampening) * g
                g = g + self.momentum * buffers[name] if self.nesterov else buffers[name]
            p -= self.lr * g
        self.steps += 1


class Adam(Optimizer):
    """Adam as ``torch.optim.Adam`` (L2 weight decay added to the gradient)::

        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {betas!r}")
        self.betas = tuple(map(float, betas))
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def step(self, grads):
        self._check(grads)
        self.steps += 1
        b1, b2 = self.betas
        bias1 = 1.0 - b1 ** self.steps
        bias2_sqrt = np.sqrt(1.0 - b2 ** self.steps)
        m_all, v_all = self.state["exp_avg"], self.state["exp_avg_sq"]
        for name, p in self.params.items():
            g = grads[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            m = m_all.setdefault(name, np.zeros_like(p))
            v = v_all.setdefault(name, np.zeros_like(p))
            m += (1.0 - b1) * (g - m)          # torch: exp_avg.lerp_(grad, 1 - beta1)
            v *= b2
            v += (1.0 - b2) * g * g
            denom = np.sqrt(v) / bias2_sqrt + self.eps
            p -= (self.lr / bias1) * (m / denom)
