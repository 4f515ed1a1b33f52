"""Generic knowledge distillation: registered loss terms (``losses``), their weighted composite (``composite``),
forward hooks and adapters (``hooks``), and the distillation task and objective builder (``distiller``)."""
