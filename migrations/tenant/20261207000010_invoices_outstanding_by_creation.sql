-- A payment changes an invoice's balance, paid total, version and time of change, and
-- nothing else the read model indexes, except an index on the balance itself: with it,
-- every payment's row update wrote a new entry into each of the table's six indexes
-- instead of staying on the row's heap page (a HOT update), which the hospital's catch-up
-- round paid for on every payment. The outstanding invoices are listed by creation (the
-- keyset of `invoices`), so their partial index holds that order instead, and the
-- dashboard's sum of outstanding balances reads the rows it finds (docs/adr/0015).
DROP INDEX invoices_outstanding;
CREATE INDEX invoices_outstanding ON invoices (created_at, id)
    WHERE status IN ('ISSUED', 'PARTIALLY_PAID');
