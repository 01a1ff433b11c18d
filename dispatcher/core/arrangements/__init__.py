"""Payment arrangements, pure (a part of the core): the terms of an agreed plan and how payments apply to
it (`terms`), the offers the strategy declares and their figures for one account (`offers`), and the
events that make, cancel and break a plan (`events`). Nothing is imported here: the models import the
terms, and the terms must not wait on the rest."""
