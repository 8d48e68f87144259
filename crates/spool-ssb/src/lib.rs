//! The Star Schema Benchmark (SSB) data Spool ships as its sample, generated deterministically.
//!
//! This crate makes rows and nothing else: no files, no engine. Writers (the Polars adapter's
//! Parquet writer) and tests (which compute expected query answers straight from these rows)
//! build on it.
//!
//! Invariants:
//! - Every row is a pure function of (seed, table, row number): each row has its own random
//!   stream, so any split of the work across threads or chunks yields the same rows.
//! - Row counts and value domains follow `shared/ssb/README.md` (SSB revision 3 laid out like
//!   Apache Kylin's sample), see [`Counts::for_scale`].

pub mod answers;
mod dates;
mod rng;

use std::ops::Range;

pub use dates::{Date, dates};
use rng::Rng;

/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 0x5EED_55B0;

/// Orders per chunk a writer should use so files are identical whatever the thread count.
pub const ORDERS_PER_CHUNK: u64 = 50_000;

/// First and last order day, counted from 1992-01-01 (1998-08-02 is day 2,405).
const LAST_ORDER_DAY: u64 = 2_405;

/// The order priorities.
pub const PRIORITIES: [&str; 5] = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
/// The ship modes.
pub const SHIP_MODES: [&str; 7] = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"];
/// The customer market segments.
pub const SEGMENTS: [&str; 5] = [
    "AUTOMOBILE",
    "BUILDING",
    "FURNITURE",
    "MACHINERY",
    "HOUSEHOLD",
];
/// TPC-H's 25 nations with their regions.
pub const NATIONS: [(&str, &str); 25] = [
    ("ALGERIA", "AFRICA"),
    ("ARGENTINA", "AMERICA"),
    ("BRAZIL", "AMERICA"),
    ("CANADA", "AMERICA"),
    ("EGYPT", "MIDDLE EAST"),
    ("ETHIOPIA", "AFRICA"),
    ("FRANCE", "EUROPE"),
    ("GERMANY", "EUROPE"),
    ("INDIA", "ASIA"),
    ("INDONESIA", "ASIA"),
    ("IRAN", "MIDDLE EAST"),
    ("IRAQ", "MIDDLE EAST"),
    ("JAPAN", "ASIA"),
    ("JORDAN", "MIDDLE EAST"),
    ("KENYA", "AFRICA"),
    ("MOROCCO", "AFRICA"),
    ("MOZAMBIQUE", "AFRICA"),
    ("PERU", "AMERICA"),
    ("CHINA", "ASIA"),
    ("ROMANIA", "EUROPE"),
    ("SAUDI ARABIA", "MIDDLE EAST"),
    ("VIETNAM", "ASIA"),
    ("RUSSIA", "EUROPE"),
    ("UNITED KINGDOM", "EUROPE"),
    ("UNITED STATES", "AMERICA"),
];
const COLORS: [&str; 16] = [
    "almond",
    "antique",
    "azure",
    "blue",
    "chartreuse",
    "coral",
    "forest",
    "ghost",
    "honeydew",
    "ivory",
    "lavender",
    "maroon",
    "navy",
    "orchid",
    "peru",
    "salmon",
];
const TYPE_WORDS: [[&str; 5]; 3] = [
    ["STANDARD", "SMALL", "MEDIUM", "LARGE", "ECONOMY"],
    ["ANODIZED", "BURNISHED", "PLATED", "POLISHED", "BRUSHED"],
    ["TIN", "NICKEL", "BRASS", "STEEL", "COPPER"],
];
const CONTAINERS: [[&str; 2]; 2] = [["SM", "LG"], ["CASE", "BOX"]];

/// Table tags that keep the random streams of different tables apart.
#[derive(Clone, Copy)]
enum Table {
    Lineorder = 1,
    Customer = 2,
    Supplier = 3,
    Part = 4,
}

/// Row counts for one scale factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Orders (each has 1 to 7 LINEORDER rows).
    pub orders: u64,
    /// CUSTOMER rows.
    pub customers: u64,
    /// SUPPLIER rows.
    pub suppliers: u64,
    /// PART rows.
    pub parts: u64,
}

impl Counts {
    /// Returns the row counts of the spec for scale factor `sf` (at least one row each).
    pub fn for_scale(sf: f64) -> Self {
        let scaled = |base: f64| ((base * sf).round() as u64).max(1);
        let parts = if sf >= 1.0 {
            200_000 * (1.0 + sf.log2()).floor() as u64
        } else {
            scaled(200_000.0)
        };
        Self {
            orders: scaled(1_500_000.0),
            customers: scaled(30_000.0),
            suppliers: scaled(2_000.0),
            parts,
        }
    }
}

/// A generator for one scale factor and seed.
#[derive(Debug, Clone)]
pub struct Ssb {
    sf: f64,
    seed: u64,
    counts: Counts,
    /// yyyymmdd of each day from 1992-01-01 on, far enough for the latest commit date.
    day_keys: Vec<i32>,
}

/// Why a scale factor was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidScale(pub f64);

impl std::fmt::Display for InvalidScale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scale factor must be a number from 0.0001 to 1000, got {}",
            self.0
        )
    }
}

impl std::error::Error for InvalidScale {}

impl Ssb {
    /// Returns a generator for scale factor `sf` with the default seed.
    pub fn new(sf: f64) -> Result<Self, InvalidScale> {
        Self::with_seed(sf, DEFAULT_SEED)
    }

    /// Returns a generator for scale factor `sf` and `seed`.
    pub fn with_seed(sf: f64, seed: u64) -> Result<Self, InvalidScale> {
        if !(0.0001..=1000.0).contains(&sf) {
            return Err(InvalidScale(sf));
        }
        let day_keys = dates::day_keys(LAST_ORDER_DAY as usize + 91);
        Ok(Self {
            sf,
            seed,
            counts: Counts::for_scale(sf),
            day_keys,
        })
    }

    /// Returns the scale factor.
    pub fn scale(&self) -> f64 {
        self.sf
    }

    /// Returns the row counts.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    fn rng(&self, table: Table, row: u64) -> Rng {
        Rng::for_row(self.seed, table as u64, row)
    }

    /// Returns the number of order chunks of [`ORDERS_PER_CHUNK`] orders.
    pub fn chunks(&self) -> u64 {
        self.counts.orders.div_ceil(ORDERS_PER_CHUNK)
    }

    /// Returns the 1-based order keys of chunk `chunk`.
    pub fn chunk_orders(&self, chunk: u64) -> Range<u64> {
        let start = chunk * ORDERS_PER_CHUNK + 1;
        start..(start + ORDERS_PER_CHUNK).min(self.counts.orders + 1)
    }

    /// Returns the LINEORDER rows of the orders in `orders` (1-based order keys).
    pub fn lineorders(&self, orders: Range<u64>) -> Lineorders {
        let mut out = Lineorders::with_capacity((orders.end - orders.start) as usize * 4);
        let c = self.counts;
        for order in orders {
            let mut rng = self.rng(Table::Lineorder, order);
            let lines = rng.range(1, 7);
            let day = rng.range(0, LAST_ORDER_DAY) as usize;
            let cust = rng.range(1, c.customers) as i32;
            let priority = PRIORITIES[rng.below(5) as usize];
            let start = out.orderkey.len();
            let mut total = 0i64;
            for line in 1..=lines {
                let part = rng.range(1, c.parts) as i64;
                let quantity = rng.range(1, 50) as i64;
                let price = retail_price(part);
                let extended = quantity * price;
                let discount = rng.range(0, 10) as i64;
                let tax = rng.range(0, 8) as i64;
                total += extended * (100 - discount) / 100 * (100 + tax) / 100;
                out.orderkey.push(order as i64);
                out.linenumber.push(line as i64);
                out.custkey.push(cust);
                out.partkey.push(part as i32);
                out.suppkey.push(rng.range(1, c.suppliers) as i32);
                out.orderdate.push(self.day_keys[day]);
                out.orderpriority.push(priority);
                out.shippriority.push(0);
                out.quantity.push(quantity);
                out.extendedprice.push(extended);
                out.ordtotalprice.push(0);
                out.discount.push(discount);
                out.revenue.push(extended * (100 - discount) / 100);
                out.supplycost.push(6 * price / 10);
                out.tax.push(tax);
                out.commitdate
                    .push(self.day_keys[day + rng.range(30, 90) as usize]);
                out.shipmode.push(SHIP_MODES[rng.below(7) as usize]);
            }
            for v in &mut out.ordtotalprice[start..] {
                *v = total;
            }
        }
        out
    }

    /// Returns every CUSTOMER row.
    pub fn customers(&self) -> Vec<Customer> {
        (1..=self.counts.customers)
            .map(|key| {
                let mut rng = self.rng(Table::Customer, key);
                let place = Place::random(&mut rng);
                Customer {
                    key: key as i32,
                    name: format!("Customer#{key:09}"),
                    address: rng.text(10, 25),
                    phone: rng.phone(place.nation_index),
                    city: place.city,
                    nation: place.nation,
                    region: place.region,
                    segment: SEGMENTS[rng.below(5) as usize],
                }
            })
            .collect()
    }

    /// Returns every SUPPLIER row.
    pub fn suppliers(&self) -> Vec<Supplier> {
        (1..=self.counts.suppliers)
            .map(|key| {
                let mut rng = self.rng(Table::Supplier, key);
                let place = Place::random(&mut rng);
                Supplier {
                    key: key as i32,
                    name: format!("Supplier#{key:09}"),
                    address: rng.text(10, 25),
                    phone: rng.phone(place.nation_index),
                    city: place.city,
                    nation: place.nation,
                    region: place.region,
                }
            })
            .collect()
    }

    /// Returns every PART row.
    pub fn parts(&self) -> Vec<Part> {
        (1..=self.counts.parts)
            .map(|key| {
                let mut rng = self.rng(Table::Part, key);
                let mfgr = rng.range(1, 5);
                let category = rng.range(1, 5);
                let brand = rng.range(1, 40);
                let color = COLORS[rng.below(COLORS.len() as u64) as usize];
                let other = COLORS[rng.below(COLORS.len() as u64) as usize];
                let kind = TYPE_WORDS
                    .iter()
                    .map(|words| words[rng.below(5) as usize])
                    .collect::<Vec<_>>()
                    .join(" ");
                let container = format!(
                    "{} {}",
                    CONTAINERS[0][rng.below(2) as usize],
                    CONTAINERS[1][rng.below(2) as usize]
                );
                Part {
                    key: key as i32,
                    name: format!("{color} {other}"),
                    mfgr: format!("MFGR#{mfgr}"),
                    category: format!("MFGR#{mfgr}{category}"),
                    brand: format!("MFGR#{mfgr}{category}{brand:02}"),
                    color,
                    kind,
                    size: rng.range(1, 50) as i32,
                    container,
                }
            })
            .collect()
    }
}

/// A part's retail price in cents (the spec's formula).
pub fn retail_price(partkey: i64) -> i64 {
    90_000 + (partkey / 10) % 20_001 + 100 * (partkey % 1_000)
}

/// Where a customer or supplier is.
struct Place {
    nation_index: usize,
    nation: &'static str,
    region: &'static str,
    city: String,
}

impl Place {
    fn random(rng: &mut Rng) -> Self {
        let nation_index = rng.below(NATIONS.len() as u64) as usize;
        let (nation, region) = NATIONS[nation_index];
        Self {
            nation_index,
            nation,
            region,
            city: city(nation, rng.below(10) as u8),
        }
    }
}

/// Returns the city name: the nation cut or space-padded to 9 characters plus one digit.
pub fn city(nation: &str, digit: u8) -> String {
    format!("{:<9.9}{digit}", nation)
}

/// LINEORDER rows as columns, in the table's column order.
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct Lineorders {
    pub orderkey: Vec<i64>,
    pub linenumber: Vec<i64>,
    pub custkey: Vec<i32>,
    pub partkey: Vec<i32>,
    pub suppkey: Vec<i32>,
    pub orderdate: Vec<i32>,
    pub orderpriority: Vec<&'static str>,
    pub shippriority: Vec<i32>,
    pub quantity: Vec<i64>,
    pub extendedprice: Vec<i64>,
    pub ordtotalprice: Vec<i64>,
    pub discount: Vec<i64>,
    pub revenue: Vec<i64>,
    pub supplycost: Vec<i64>,
    pub tax: Vec<i64>,
    pub commitdate: Vec<i32>,
    pub shipmode: Vec<&'static str>,
}

impl Lineorders {
    fn with_capacity(n: usize) -> Self {
        Self {
            orderkey: Vec::with_capacity(n),
            linenumber: Vec::with_capacity(n),
            custkey: Vec::with_capacity(n),
            partkey: Vec::with_capacity(n),
            suppkey: Vec::with_capacity(n),
            orderdate: Vec::with_capacity(n),
            orderpriority: Vec::with_capacity(n),
            shippriority: Vec::with_capacity(n),
            quantity: Vec::with_capacity(n),
            extendedprice: Vec::with_capacity(n),
            ordtotalprice: Vec::with_capacity(n),
            discount: Vec::with_capacity(n),
            revenue: Vec::with_capacity(n),
            supplycost: Vec::with_capacity(n),
            tax: Vec::with_capacity(n),
            commitdate: Vec::with_capacity(n),
            shipmode: Vec::with_capacity(n),
        }
    }

    /// Returns the number of rows.
    pub fn len(&self) -> usize {
        self.orderkey.len()
    }

    /// Returns true when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.orderkey.is_empty()
    }
}

/// A CUSTOMER row.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Customer {
    pub key: i32,
    pub name: String,
    pub address: String,
    pub city: String,
    pub nation: &'static str,
    pub region: &'static str,
    pub phone: String,
    pub segment: &'static str,
}

/// A SUPPLIER row.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Supplier {
    pub key: i32,
    pub name: String,
    pub address: String,
    pub city: String,
    pub nation: &'static str,
    pub region: &'static str,
    pub phone: String,
}

/// A PART row.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Part {
    pub key: i32,
    pub name: String,
    pub mfgr: String,
    pub category: String,
    pub brand: String,
    pub color: &'static str,
    pub kind: String,
    pub size: i32,
    pub container: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_spec() {
        assert_eq!(
            Counts::for_scale(1.0),
            Counts {
                orders: 1_500_000,
                customers: 30_000,
                suppliers: 2_000,
                parts: 200_000
            }
        );
        assert_eq!(Counts::for_scale(10.0).parts, 800_000);
        assert_eq!(Counts::for_scale(0.01).parts, 2_000);
        assert_eq!(Counts::for_scale(0.0001).suppliers, 1);
    }

    #[test]
    fn scale_is_checked() {
        assert!(Ssb::new(0.0).is_err());
        assert!(Ssb::new(f64::NAN).is_err());
        assert!(Ssb::new(2000.0).is_err());
        assert!(Ssb::new(0.01).is_ok());
    }

    #[test]
    fn rows_do_not_depend_on_how_the_work_is_split() {
        let ssb = Ssb::new(0.01).expect("scale");
        let whole = ssb.lineorders(1..101);
        let mut halves = ssb.lineorders(1..51);
        let second = ssb.lineorders(51..101);
        halves.orderkey.extend(second.orderkey);
        halves.revenue.extend(second.revenue);
        assert_eq!(whole.orderkey, halves.orderkey);
        assert_eq!(whole.revenue, halves.revenue);
        assert_eq!(ssb.customers(), Ssb::new(0.01).expect("scale").customers());
    }

    #[test]
    fn values_stay_in_their_domains() {
        let ssb = Ssb::new(0.01).expect("scale");
        let c = ssb.counts();
        let rows = ssb.lineorders(1..c.orders + 1);
        let lines = rows.len() as f64 / c.orders as f64;
        assert!((3.8..4.2).contains(&lines), "{lines} lines per order");
        for i in 0..rows.len() {
            assert!((1..=7).contains(&rows.linenumber[i]));
            assert!((1..=50).contains(&rows.quantity[i]));
            assert!((0..=10).contains(&rows.discount[i]));
            assert!((0..=8).contains(&rows.tax[i]));
            assert!((19920101..=19980802).contains(&rows.orderdate[i]));
            assert!(rows.commitdate[i] > rows.orderdate[i]);
            assert!((1..=c.customers as i32).contains(&rows.custkey[i]));
            assert!((1..=c.parts as i32).contains(&rows.partkey[i]));
            assert!((1..=c.suppliers as i32).contains(&rows.suppkey[i]));
            assert_eq!(
                rows.extendedprice[i],
                rows.quantity[i] * retail_price(rows.partkey[i] as i64)
            );
            assert_eq!(
                rows.revenue[i],
                rows.extendedprice[i] * (100 - rows.discount[i]) / 100
            );
        }
        let brands: std::collections::HashSet<String> =
            ssb.parts().into_iter().map(|p| p.brand).collect();
        assert!(
            brands
                .iter()
                .all(|b| b.len() == 9 && b.starts_with("MFGR#"))
        );
        assert!(brands.len() > 500, "{} brands", brands.len());
    }

    #[test]
    fn cities_are_nine_characters_and_a_digit() {
        assert_eq!(city("UNITED KINGDOM", 1), "UNITED KI1");
        assert_eq!(city("PERU", 3), "PERU     3");
        let customers = Ssb::new(0.01).expect("scale").customers();
        assert!(customers.iter().all(|c| c.city.len() == 10));
        assert_eq!(customers[0].name, "Customer#000000001");
    }
}
