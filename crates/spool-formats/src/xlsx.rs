//! XLSX: the writer's constant-memory mode; rows wait in a temporary file until the workbook
//! is zipped into the sink at the end.

#[allow(clippy::wildcard_imports)]
use crate::*;

/// One worksheet in constant-memory mode. Numbers are numbers (integers beyond 2^53, which a
/// spreadsheet cannot hold exactly, are text), dates and timestamps are dates.
pub(crate) struct Xlsx {
    workbook: Workbook,
    names: Vec<String>,
    header: bool,
    scratch: PathBuf,
    row: u32,
    max_rows: u64,
    date: Format,
    datetime: Format,
}

impl Xlsx {
    pub(crate) fn new(names: Vec<String>, header: bool, scratch: PathBuf, max_rows: u64) -> Self {
        Self {
            workbook: Workbook::new(),
            names,
            header,
            scratch,
            row: 0,
            max_rows,
            date: Format::new().set_num_format("yyyy-mm-dd"),
            datetime: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
        }
    }
}

/// The largest integer an IEEE double holds exactly.
pub(crate) const EXACT_IN_DOUBLE: i128 = 1 << 53;

pub(crate) fn too_many_rows(max: u64) -> io::Error {
    result_error(format!(
        "result has more rows than an XLSX sheet holds ({max} including the header); use csv or parquet"
    ))
}

/// Writes one value into a cell.
pub(crate) fn write_cell(
    sheet: &mut rust_xlsxwriter::Worksheet,
    row: u32,
    col: u16,
    value: AnyValue<'_>,
    date: &Format,
    datetime: &Format,
) -> Result<(), XlsxError> {
    let int = |sheet: &mut rust_xlsxwriter::Worksheet, v: i128| {
        if v.abs() <= EXACT_IN_DOUBLE {
            sheet.write_number(row, col, v as f64).map(|_| ())
        } else {
            sheet.write_string(row, col, v.to_string()).map(|_| ())
        }
    };
    match value {
        AnyValue::Null => Ok(()),
        AnyValue::Boolean(b) => sheet.write_boolean(row, col, b).map(|_| ()),
        AnyValue::String(s) => sheet.write_string(row, col, s).map(|_| ()),
        AnyValue::StringOwned(s) => sheet.write_string(row, col, s.as_str()).map(|_| ()),
        AnyValue::Int8(v) => int(sheet, v.into()),
        AnyValue::Int16(v) => int(sheet, v.into()),
        AnyValue::Int32(v) => int(sheet, v.into()),
        AnyValue::Int64(v) => int(sheet, v.into()),
        AnyValue::UInt8(v) => int(sheet, v.into()),
        AnyValue::UInt16(v) => int(sheet, v.into()),
        AnyValue::UInt32(v) => int(sheet, v.into()),
        AnyValue::UInt64(v) => int(sheet, v.into()),
        AnyValue::Float32(v) => sheet.write_number(row, col, v).map(|_| ()),
        AnyValue::Float64(v) => sheet.write_number(row, col, v).map(|_| ()),
        AnyValue::Date(days) => {
            let d = ExcelDateTime::from_timestamp(i64::from(days) * 86_400)?;
            sheet
                .write_datetime_with_format(row, col, d, date)
                .map(|_| ())
        }
        AnyValue::Decimal(..) => match value.to_string().parse::<f64>() {
            Ok(f) => sheet.write_number(row, col, f).map(|_| ()),
            Err(_) => sheet.write_string(row, col, value.to_string()).map(|_| ()),
        },
        AnyValue::Datetime(..) | AnyValue::DatetimeOwned(..) => {
            let text = value.to_string();
            match ExcelDateTime::parse_from_str(&text) {
                Ok(d) => sheet
                    .write_datetime_with_format(row, col, d, datetime)
                    .map(|_| ()),
                Err(_) => sheet.write_string(row, col, text).map(|_| ()),
            }
        }
        other => sheet.write_string(row, col, other.to_string()).map(|_| ()),
    }
}

impl Encoder for Xlsx {
    fn begin(&mut self, _out: &mut dyn ResultSink) -> io::Result<()> {
        std::fs::create_dir_all(&self.scratch)?;
        self.workbook.set_tempdir(&self.scratch).map_err(xlsx_io)?;
        let sheet = self
            .workbook
            .add_worksheet_with_constant_memory()
            .map_err(xlsx_io)?;
        if self.header {
            for (col, name) in self.names.iter().enumerate() {
                sheet
                    .write_string(0, col as u16, name.as_str())
                    .map_err(xlsx_io)?;
            }
            self.row = 1;
        }
        Ok(())
    }

    fn write(&mut self, batch: &mut DataFrame, _out: &mut dyn ResultSink) -> io::Result<()> {
        if u64::from(self.row) + batch.height() as u64 > self.max_rows {
            return Err(too_many_rows(self.max_rows));
        }
        let sheet = self.workbook.worksheet_from_index(0).map_err(xlsx_io)?;
        if batch.width() > usize::from(u16::MAX) {
            return Err(result_error(
                "result has more columns than an XLSX sheet holds".to_owned(),
            ));
        }
        // Row by row: in constant-memory mode a row is flushed once the next one starts.
        let mut columns = column_values(batch);
        for i in 0..batch.height() {
            let row = self.row + i as u32;
            for (col, values) in columns.iter_mut().enumerate() {
                let value = values.next().unwrap_or(AnyValue::Null);
                write_cell(sheet, row, col as u16, value, &self.date, &self.datetime)
                    .map_err(xlsx_io)?;
            }
        }
        self.row += batch.height() as u32;
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn ResultSink) -> io::Result<()> {
        self.workbook.save_to_writer(&mut *out).map_err(xlsx_io)
    }
}
