"""ipywidgets views over core objects; imported only when a widget is used."""
