"""The status model, mirrored from its source: the rows of `sequencing.status` (sql/0001_foundation.sql).

Python needs the keys without a round trip (validating `mark`, mapping carrier statuses), so they
are repeated here once; tests/test_statuses.py checks this module and the table agree, keys,
order, labels and terminal flags alike.
"""

from __future__ import annotations

# key -> Portuguese label, in the table's display order (its `position` column).
LABELS: dict[str, str] = {
    "pending": "Pedido recebido",
    "in_transit": "Em trânsito",
    "out_for_delivery": "Saiu para entrega",
    "failed_attempt": "Tentativa de entrega sem sucesso",
    "available_for_pickup": "Aguardando retirada",
    "exception": "Ocorrência no transporte",
    "delivered": "Entregue",
    "returned": "Devolvido ao remetente",
    "cancelled": "Cancelado",
}
STATUSES: tuple[str, ...] = tuple(LABELS)
# Finished shipments: never polled again, never changed by hand.
TERMINAL: frozenset[str] = frozenset({"delivered", "returned", "cancelled"})
# The statuses that are polled, and so can have a poll interval of their own.
POLLED: tuple[str, ...] = tuple(s for s in STATUSES if s not in TERMINAL)
