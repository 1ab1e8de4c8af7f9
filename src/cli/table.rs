//! Tables for people: each column as wide as its widest cell, so long names
//! never push the columns out of line.

/// Prints `header` and `rows`; columns whose index is in `right` are
/// right-aligned (amounts).
pub fn print(header: &[&str], rows: &[Vec<String>], right: &[usize]) {
    for line in render(header, rows, right) {
        println!("{line}");
    }
}

fn render(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> Vec<String> {
    let width = |i: usize| {
        rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).chain([header[i].chars().count()]).max()
    };
    let widths: Vec<usize> = (0..header.len()).map(|i| width(i).unwrap_or(0)).collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| if right.contains(&i) { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_fit_their_widest_cell() {
        let rows = vec![
            vec!["a-very-long-budget-identifier-indeed".to_string(), "1.00".to_string()],
            vec!["b".to_string(), "120.50".to_string()],
        ];
        let lines = super::render(&["ID", "LIMIT"], &rows, &[1]);
        assert_eq!(lines[0], "ID                                     LIMIT");
        assert_eq!(lines[1], "a-very-long-budget-identifier-indeed    1.00");
        assert_eq!(lines[2], "b                                     120.50");
    }
}
