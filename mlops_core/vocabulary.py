"""The landing contract's vocabularies: allowed values and bounds, without pandas.

The contracts (mlops_core/contracts.py) check data against them; the feature spec, the request schema and
the project declarations read them too, and those must load without pandas and pandera.
"""

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurants",
    "gas_transport",
    "retail",
    "pharmacy",
    "entertainment",
    "utilities",
    "travel",
    "electronics",
    "digital_goods",
    "jewelry",
    "gambling",
)
CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "CAD", "MXN", "BRL", "INR", "NGN", "JPY")
CHANNELS: tuple[str, ...] = ("in_store", "online")
COUNTRIES: tuple[str, ...] = ("US", "CA", "MX", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "NG", "JP")
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
LABEL_SOURCES: tuple[str, ...] = ("chargeback", "customer_report", "maturity")

# A single card payment above this is treated as a data error, not a purchase.
MAX_AMOUNT = 50_000.0
