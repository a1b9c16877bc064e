//! Order books from CSV, and fills shaped for reports: the CLI's market edge.
//!
//! Owns the file format `id,side,kwh,limit_price` (header exactly that; one
//! order per row; fields trimmed), the conversion from human units (kWh,
//! currency/kWh) to the market's fixed point, and the reverse for reports.
//! Every problem is a [`CoreError::Data`] naming file, line (the header is
//! line 1) and column; a book is returned whole or not at all. It must never
//! open files itself (the caller hands in a reader) nor print anything.

use std::collections::HashMap;
use std::io::Read;

use serde::Serialize;

use super::order::{Clearing, Order, OrderId, Side};
use crate::error::CoreError;
use crate::units::{PricePerKwh, Wh};

/// The only accepted header.
const COLUMNS: [&str; 4] = ["id", "side", "kwh", "limit_price"];
/// Same cap as `validate_orders`, in the file's unit.
const MAX_KWH: f64 = 1e9;

/// A parsed book: `orders[i].id == i`, and `labels[i]` is row i's `id` text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderBook {
    /// The `id` text of each row, in row order.
    pub labels: Vec<String>,
    /// The orders, `orders[i].id == i`.
    pub orders: Vec<Order>,
}

/// One order's outcome in human units, for JSON or table output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FillReport {
    /// The order's `id` text from the file.
    pub id: String,
    /// The order's side.
    pub side: Side,
    /// Energy filled, kWh (0 when unfilled).
    pub kwh: f64,
    /// Average price of the fill, currency/kWh; `None` when unfilled.
    pub price: Option<f64>,
}

/// Reads a book from CSV. `file_label` is only used in error messages.
pub fn read_order_book(reader: impl Read, file_label: &str) -> Result<OrderBook, CoreError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut records = csv.records();
    let header = match records.next() {
        Some(record) => record.map_err(|e| csv_error(file_label, &e))?,
        None => {
            return Err(CoreError::data(
                file_label,
                1,
                "header",
                format!("empty file: expected header {}", COLUMNS.join(",")),
            ))
        }
    };
    if header.iter().ne(COLUMNS) {
        let found = header.iter().collect::<Vec<_>>().join(",");
        return Err(CoreError::data(
            file_label,
            1,
            "header",
            format!("expected {}, found {found}", COLUMNS.join(",")),
        ));
    }
    let mut book = OrderBook::default();
    let mut first_line_of: HashMap<String, u64> = HashMap::new();
    for record in records {
        let record = record.map_err(|e| csv_error(file_label, &e))?;
        let line = record.position().map_or(0, |p| p.line());
        let row = Row { file: file_label, line, record: &record };
        let (label, order) = row.parse(book.orders.len() as OrderId)?;
        if let Some(first) = first_line_of.insert(label.clone(), line) {
            return Err(row.error("id", format!("duplicate id {label:?} (first on line {first})")));
        }
        book.labels.push(label);
        book.orders.push(order);
    }
    Ok(book)
}

/// One fill report per order of `book`, in book order.
pub fn fill_reports(book: &OrderBook, clearing: &Clearing) -> Vec<FillReport> {
    book.labels
        .iter()
        .zip(&book.orders)
        .zip(&clearing.fills)
        .map(|((label, order), fill)| FillReport {
            id: label.clone(),
            side: order.side,
            kwh: fill.quantity.kwh(),
            price: fill.average_price_per_kwh(),
        })
        .collect()
}

/// A data row being parsed, so every error carries file and line.
struct Row<'a> {
    file: &'a str,
    line: u64,
    record: &'a csv::StringRecord,
}

impl Row<'_> {
    fn parse(&self, id: OrderId) -> Result<(String, Order), CoreError> {
        if self.record.len() > COLUMNS.len() {
            let reason = format!(
                "expected {} fields ({}), found {}",
                COLUMNS.len(),
                COLUMNS.join(","),
                self.record.len()
            );
            return Err(self.error("-", reason));
        }
        let label = self.field(0)?;
        if label.is_empty() {
            return Err(self.error("id", "must not be empty"));
        }
        let side = match self.field(1)?.to_ascii_lowercase().as_str() {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            other => return Err(self.error("side", format!("expected buy or sell, got {other:?}"))),
        };
        let quantity = self.quantity()?;
        let limit_price = self.limit_price()?;
        Ok((label.to_string(), Order { id, side, quantity, limit_price }))
    }

    fn field(&self, column: usize) -> Result<&str, CoreError> {
        self.record.get(column).ok_or_else(|| self.error(COLUMNS[column], "missing"))
    }

    fn number(&self, column: usize) -> Result<f64, CoreError> {
        let text = self.field(column)?;
        let value: f64 = text
            .parse()
            .map_err(|_| self.error(COLUMNS[column], format!("not a number: {text:?}")))?;
        if !value.is_finite() {
            return Err(self.error(COLUMNS[column], format!("must be finite, got {text}")));
        }
        Ok(value)
    }

    fn quantity(&self) -> Result<Wh, CoreError> {
        let kwh = self.number(2)?;
        if kwh <= 0.0 || kwh > MAX_KWH {
            return Err(self.error("kwh", format!("must be in (0, {MAX_KWH}], got {kwh}")));
        }
        let quantity = Wh::from_kwh(kwh, "kwh").map_err(|e| self.error("kwh", e.to_string()))?;
        if quantity.0 == 0 {
            // The market trades whole Wh; a positive order must not vanish.
            return Err(self.error("kwh", format!("{kwh} rounds to 0 Wh")));
        }
        Ok(quantity)
    }

    fn limit_price(&self) -> Result<PricePerKwh, CoreError> {
        let price = self.number(3)?;
        if price < 0.0 {
            return Err(self.error("limit_price", format!("must be ≥ 0, got {price}")));
        }
        PricePerKwh::from_per_kwh(price, "limit_price")
            .map_err(|e| self.error("limit_price", e.to_string()))
    }

    fn error(&self, column: &str, reason: impl Into<String>) -> CoreError {
        CoreError::data(self.file, self.line, column, reason)
    }
}

fn csv_error(file: &str, error: &csv::Error) -> CoreError {
    let line = error.position().map_or(0, |p| p.line());
    CoreError::data(file, line, "-", error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Fill;
    use crate::units::Money;

    const GOOD: &str = "id,side,kwh,limit_price\nalice,buy,2.5,0.22\nbob, SELL ,1,0.10\n";

    fn error_of(text: &str) -> String {
        read_order_book(text.as_bytes(), "book.csv").unwrap_err().to_string()
    }

    #[test]
    fn reads_rows_in_order_with_row_index_ids() {
        let book = read_order_book(GOOD.as_bytes(), "book.csv").unwrap();
        assert_eq!(book.labels, ["alice", "bob"]);
        assert_eq!(
            book.orders,
            [
                Order {
                    id: 0,
                    side: Side::Buy,
                    quantity: Wh(2500),
                    limit_price: PricePerKwh(220_000)
                },
                Order {
                    id: 1,
                    side: Side::Sell,
                    quantity: Wh(1000),
                    limit_price: PricePerKwh(100_000)
                },
            ]
        );
    }

    #[test]
    fn header_must_match_exactly() {
        assert_eq!(
            error_of(""),
            "book.csv:1: column header: empty file: expected header id,side,kwh,limit_price"
        );
        assert_eq!(
            error_of("id,side,kwh,price\n"),
            "book.csv:1: column header: expected id,side,kwh,limit_price, found id,side,kwh,price"
        );
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let cases = [
            ("a,buy,1\n", "book.csv:2: column limit_price: missing"),
            ("a,buy,NaN,0.1\n", "book.csv:2: column kwh: must be finite, got NaN"),
            ("a,buy,-1,0.1\n", "book.csv:2: column kwh: must be in (0, 1000000000], got -1"),
            ("a,buy,0.0001,0.1\n", "book.csv:2: column kwh: 0.0001 rounds to 0 Wh"),
            ("a,buy,x,0.1\n", "book.csv:2: column kwh: not a number: \"x\""),
            ("a,hold,1,0.1\n", "book.csv:2: column side: expected buy or sell, got \"hold\""),
            ("a,sell,1,-0.1\n", "book.csv:2: column limit_price: must be ≥ 0, got -0.1"),
            ("a,sell,1,inf\n", "book.csv:2: column limit_price: must be finite, got inf"),
            (",sell,1,0.1\n", "book.csv:2: column id: must not be empty"),
            (
                "a,sell,1,0.1,9\n",
                "book.csv:2: column -: expected 4 fields (id,side,kwh,limit_price), found 5",
            ),
            (
                "a,sell,1,0.1\nb,buy,1,0.2\na,buy,2,0.3\n",
                "book.csv:4: column id: duplicate id \"a\" (first on line 2)",
            ),
        ];
        for (rows, expected) in cases {
            let text = format!("id,side,kwh,limit_price\n{rows}");
            assert_eq!(error_of(&text), expected, "rows: {rows:?}");
        }
    }

    #[test]
    fn fill_reports_use_labels_and_average_prices() {
        let book = read_order_book(GOOD.as_bytes(), "book.csv").unwrap();
        let fill = Fill { quantity: Wh(1000), value: Money::of(Wh(1000), PricePerKwh(150_000)) };
        let clearing = Clearing {
            clearing_price: Some(PricePerKwh(150_000)),
            matched: Wh(1000),
            fills: vec![fill, fill],
        };
        let reports = fill_reports(&book, &clearing);
        assert_eq!(
            reports[0],
            FillReport { id: "alice".into(), side: Side::Buy, kwh: 1.0, price: Some(0.15) }
        );
        let json = serde_json::to_string(&reports[1]).unwrap();
        assert_eq!(json, r#"{"id":"bob","side":"sell","kwh":1.0,"price":0.15}"#);
    }
}
