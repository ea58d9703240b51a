"""Meta-train a sine regressor with MAML, then adapt it to a new sine from 5 points."""

import torch
import torch.nn.functional as F

from metagrad import MAML
from metagrad.models import MLP
from metagrad.tasks.sinusoid import SinusoidTasks, TaskStream

torch.manual_seed(0)
model = MLP(1, 1, hidden=(40, 40))  # any nn.Module works
maml = MAML(model, F.mse_loss, inner_lr=0.01, inner_steps=1)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
tasks = TaskStream(SinusoidTasks(), shots=10, queries=10, seed=0)
for _ in range(2000):
    opt.zero_grad()
    out = maml.backward(tasks.sample(25))  # meta-gradient written into .grad
    opt.step()
new = tasks.sample(1).task(0)  # a sine never seen before
phi = maml.adapt(new.support_x, new.support_y, inner_steps=10)  # adapted params (a dict)
mse = F.mse_loss(maml.predict(phi, new.query_x), new.query_y)
print(f"meta-train loss {out.loss:.3f}; new task MSE after 10 steps {mse:.3f}")
